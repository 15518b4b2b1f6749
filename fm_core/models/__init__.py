"""Time-conditioned networks: an MLP for low-dimensional data and an ADM-style U-Net for images."""
