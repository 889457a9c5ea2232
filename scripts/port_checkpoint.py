r"""Ports a released PyTorch ViT checkpoint into a workdir of this repository.

  python scripts/port_checkpoint.py --from=ropevit --input=pytorch_model.bin --workdir=DIR
  python scripts/port_checkpoint.py --from=dinov3 \
      --input=dinov3_vits16_pretrain_lvd1689m-08c60483.pth --workdir=DIR
  python scripts/port_checkpoint.py --from=eva02 --input=model.npz --workdir=DIR

--from: ropevit (naver-ai/rope-vit RoPE-Axial / Mixed [+ APE]), dinov3 (facebookresearch/dinov3),
eva02 (timm's EVA-02). --input: a state_dict as `.pth` / `.pt` / `.bin` (needs torch) or `.npz`
(its arrays under the original names, no torch); the released names and timm's are both read.
DIR gets config.json and an orbax checkpoint at step 0, as train.py writes them:
`python eval.py --workdirs=DIR --resolutions=...` evaluates it; `python train.py
--config=... --config.init_from=DIR` fine-tunes from it (README "Porting checkpoints").

A checkpoint that does not fit (another family, missing / unexpected keys, wrong shapes) stops
with one line naming the keys, and nothing is written. Exit codes: 0 done, 1 bad input.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import porting  # pylint: disable=g-import-not-at-top,wrong-import-position


def _grid(text: str) -> tuple[int, int]:
  parts = text.replace("x", ",").split(",")
  if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
    raise argparse.ArgumentTypeError(f"{text!r}: give rows,cols (e.g. 16,16)")
  return int(parts[0]), int(parts[1])


def parse_args(argv: list[str]) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--from", dest="family", required=True,
                 help=f"checkpoint family: {', '.join(porting.FAMILIES)}")
  p.add_argument("--input", required=True, help=".pth / .pt / .bin (torch) or .npz state_dict")
  p.add_argument("--workdir", required=True, help="new directory for config.json + checkpoint")
  p.add_argument("--dataset", default="imagenet2012",
                 help="data.vision dataset of the config (its classes must match the head)")
  p.add_argument("--data_dir", default=None, help="data.data_dir (tfds) written to the config")
  p.add_argument("--num_heads", type=int, default=None,
                 help="attention heads (not stored in most files; default: from the file, "
                      "else width / 64 as every released model)")
  p.add_argument("--image_size", type=int, default=None,
                 help="native resolution when the file has no APE to read it from (224)")
  p.add_argument("--rope_grid", type=_grid, default=None,
                 help="eva02 only: RoPE reference grid ref_feat_shape rows,cols (16,16)")
  p.add_argument("--seed", type=int, default=0, help="config seed (training key of the state)")
  return p.parse_args(argv)


def main(argv: list[str]) -> int:
  args = parse_args(argv)
  try:
    module = porting.family_module(args.family)     # ValueError naming --from first
    from porting import state_dict  # pylint: disable=g-import-not-at-top
    from porting import workdir  # pylint: disable=g-import-not-at-top
    sd = state_dict.load(args.input)
    state_dict.check_family(sd, args.family, args.input)
    ported = module.convert(sd, num_heads=args.num_heads, image_size=args.image_size,
                            rope_grid=args.rope_grid)
    config = workdir.write(ported, args.workdir, dataset=args.dataset, data_dir=args.data_dir,
                           seed=args.seed)
  except ValueError as e:
    print(f"port_checkpoint.py: {e}", file=sys.stderr)
    return 1
  m = config.model
  print(f"port_checkpoint.py: {args.input} -> {args.workdir}: encoding {m.encoding}, depth "
        f"{m.depth}, {m.num_heads} heads x {m.head_dim}, {config.data.image_size} px, "
        f"dataset {config.data.name}.")
  for note in ported.notes:
    print(f"  note: {note}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
