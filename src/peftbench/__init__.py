"""peftbench: a fair referee for parameter-efficient fine-tuning methods."""

import logging

__version__ = "0.1.0"

# torchao (the `quantized` extra) is imported by transformers and peft in every process once
# installed. On a CPU build of torch it cannot load its CUDA-only kernels and says so at
# WARNING, and its Enum registrations log torch's deprecation of register_constant: noise on
# every command that changes nothing peftbench does (its CPU int8 path needs neither).
logging.getLogger("torchao").setLevel(logging.ERROR)
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
