"""Networks and what runs them: built from a ``ModelConfig``, saved with their preprocessing.

- ``unet``: our U-Net from named blocks, with a space-to-depth stem.
- ``factory``: ``build_model`` for our U-Net and MONAI's networks.
- ``checkpoint``: weights + model config + classes + training size, loaded without pickle.
- ``losses``: Dice (foreground) + cross-entropy.
- ``runtime``: device, seeds and threads, bf16, memory layout.
- ``inference``: logits for a batch, and a label map at an image's native size.
"""
