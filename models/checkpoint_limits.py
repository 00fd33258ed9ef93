"""The caps of mmedge's checkpoint reader, in one place (the README documents them).

Every size a hostile `torch.save` file could inflate is checked against one of these
before anything is allocated; the reader, the unpickler and the model builder all read
them from here so that a cap is changed once.
"""

from __future__ import annotations

MAX_CHECKPOINT_BYTES = 8 << 30  # the checkpoint file, and all tensor bytes read from it
MAX_PICKLE_BYTES = 64 << 20  # the pickled object tree (data.pkl / the legacy stream's pickles)
MAX_COMPRESSION_RATIO = 20  # a compressed zip member inflates at most this much (torch stores them uncompressed)
MAX_TENSOR_DIMS = 32
MAX_WEIGHTS = 1 << 29  # elements in the encoder + decoder weights (the tutorial's ResNet-101: ~65M)
MAX_BLOCKS_PER_STAGE = 64  # ResNet-152 has 36
MAX_ENCODED_SIZE = 64  # the pooled grid (the tutorial: 14)
MAX_WORD_MAP_BYTES = 64 << 20  # the COCO word map: ~0.2 MB
_MAX_INDEX = 1 << 62  # the largest shape, stride, offset or element count a header may state
