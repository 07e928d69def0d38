"""Training (`matting train`): distilling the U-Net from a teacher; data, synthetic composites, the loss."""
