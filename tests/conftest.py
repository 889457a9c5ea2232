"""Test session setup.

Four fake CPU devices so that data-parallel code is exercised by every test run. This must
happen before anything imports jax, which is why it lives here and not in a fixture.
"""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests compare against float32 references; keep XLA from using faster, less exact paths.
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")
