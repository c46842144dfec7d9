"""Native CPU kernels (C++, loaded with ctypes) for small decode steps: 4-bit matmuls on the GGUF's
codes with RMSNorm, SiLU·mul, residual adds and RoPE fused in; the torch path stays the reference."""
