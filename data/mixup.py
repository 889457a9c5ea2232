"""Label targets and Mixup / CutMix on a batch.

Pairing: rows (2k, 2k+1) of a batch are mixed with each other (timm's "pair" mode: one
lambda, one Mixup-or-CutMix choice and one box per pair; row 2k keeps weight lambda on itself
and gets 1 - lambda of row 2k+1, and vice versa). The randomness of a pair is keyed by
(seed, pair id) with pair id = global position of its first row // 2. Because the pipeline
lays out every global batch as consecutive global positions and gives each process an
even-sized, even-aligned block of rows, the pairs — and hence the mixed global batch — are the
same for any number of processes. Mixup therefore pairs examples within the local batch, which
is as random as pairing across hosts: the rows are already a random permutation of the data.
"""
import numpy as np


def one_hot_targets(labels: np.ndarray, num_classes: int, smoothing: float = 0.0) -> np.ndarray:
  """int labels [B] -> float32 [B, K]: 1 - smoothing + smoothing/K on the label, smoothing/K
  elsewhere (timm's `mixup_target` convention). Rows sum to 1."""
  off = smoothing / num_classes
  targets = np.full((len(labels), num_classes), off, np.float32)
  targets[np.arange(len(labels)), labels] = 1.0 - smoothing + off
  return targets


def cutmix_box(rng: np.random.Generator, height: int, width: int,
               lam: float) -> tuple[int, int, int, int]:
  """timm's `rand_bbox`: a box of side sqrt(1 - lam) * side around a uniform centre, clipped.

  Returns:
    (top, bottom, left, right), half-open.
  """
  ratio = np.sqrt(1.0 - lam)
  cut_h, cut_w = int(height * ratio), int(width * ratio)
  cy, cx = int(rng.integers(height)), int(rng.integers(width))
  top, bottom = np.clip([cy - cut_h // 2, cy + cut_h // 2], 0, height)
  left, right = np.clip([cx - cut_w // 2, cx + cut_w // 2], 0, width)
  return int(top), int(bottom), int(left), int(right)


def mix_pairs(images: np.ndarray, targets: np.ndarray, pair_ids: np.ndarray, *, seed: int,
              mixup_alpha: float, cutmix_alpha: float, prob: float = 1.0,
              switch_prob: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
  """Mixup / CutMix of rows (2k, 2k+1).

  Per pair, with probability `prob`: if both alphas are > 0, CutMix with probability
  `switch_prob` else Mixup (timm's switch); lam ~ Beta(alpha, alpha). Mixup blends whole images
  with weight lam; CutMix pastes the partner's box and sets lam = 1 - box area / image area
  (timm's `correct_lam`). Targets are blended with the same lam, so rows still sum to 1.

  Args:
    images: float32 [B, H, W, C], B even.
    targets: float32 [B, K].
    pair_ids: int [B // 2], the key of each pair.
    seed: mixing seed.
    mixup_alpha: Beta parameter of Mixup (0 = no Mixup).
    cutmix_alpha: Beta parameter of CutMix (0 = no CutMix).
    prob: probability that a pair is mixed at all.
    switch_prob: probability of CutMix when both are enabled.

  Returns:
    (images, targets), new arrays of the same shapes.
  """
  if len(images) % 2:
    raise ValueError(f"images: Mixup/CutMix pairs rows, needs an even batch, got {len(images)}")
  images, targets = images.copy(), targets.copy()
  height, width = images.shape[1:3]
  for k, pair_id in enumerate(pair_ids):
    rng = np.random.default_rng([seed, int(pair_id)])
    if mixup_alpha <= 0 and cutmix_alpha <= 0 or rng.random() >= prob:
      continue
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or rng.random() < switch_prob)
    a, b = 2 * k, 2 * k + 1
    if use_cutmix:
      lam = rng.beta(cutmix_alpha, cutmix_alpha)
      top, bottom, left, right = cutmix_box(rng, height, width, lam)
      lam = 1.0 - (bottom - top) * (right - left) / (height * width)
      box = (slice(top, bottom), slice(left, right))
      patch_a = images[a][box].copy()
      images[a][box] = images[b][box]
      images[b][box] = patch_a
    else:
      lam = rng.beta(mixup_alpha, mixup_alpha)
      images[a], images[b] = (lam * images[a] + (1 - lam) * images[b],
                              lam * images[b] + (1 - lam) * images[a])
    targets[a], targets[b] = (lam * targets[a] + (1 - lam) * targets[b],
                              lam * targets[b] + (1 - lam) * targets[a])
  return images, targets
