"""Custom kernels for the hot spots of the VAE family.

Each module has three implementations behind one call:
  reference  readable NumPy/CuPy code, the oracle the tests compare against;
  cpu        a Numba CPU kernel (NumPy arrays);
  cuda       a Numba CUDA kernel (CuPy arrays, via __cuda_array_interface__, on CuPy's
             current stream; NumPy arrays are copied to the device and back, which is how
             the tests drive it under the CUDA simulator).
The array type picks the implementation; ``impl="reference"|"cpu"|"cuda"`` forces one.

reparam_kl  z = μ + exp(½ log σ²) ⊙ ε fused with the KL of N(μ, σ²) to N(0, I)
bce_logits  binary cross-entropy with logits (Bernoulli pixels) and its gradient
adam        one Adam / AdamW step over a parameter, its moments and its gradient
vq          nearest-codebook search and the EMA codebook statistics
im2col      a convolution's receptive fields gathered as columns, and the adjoint scatter-add
            col2im (convolutions, their gradients, pooling gradients)
gru_cell    the gates and state update of one GRU step, and their gradients
"""
from . import adam, bce_logits, gru_cell, im2col, reparam_kl, vq

__all__ = ["adam", "bce_logits", "gru_cell", "im2col", "reparam_kl", "vq"]
