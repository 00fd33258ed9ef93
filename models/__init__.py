"""PyTorch reference models (needs torch). `mmedge.models.zoo` lists them."""
