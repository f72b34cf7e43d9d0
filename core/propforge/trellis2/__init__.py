"""TRELLIS.2 image-to-3D engine in plain PyTorch (+ ``propforge.sparse`` for the sparse VAE ops).

Data flows one way (spec generator.md, ovoxel-and-export.md §1-2):

* ``conditioning`` - image preprocessing (alpha crop, premultiply) and DINOv3 tokens; BiRefNet
  background removal only for images without usable alpha.
* ``flow`` - the sparse-structure DiT (dense 16³) and the SLat DiTs (sparse), one file.
* ``samplers`` - flow Euler with CFG, guidance interval and rescale (float64 schedule).
* ``ss_decoder`` - dense occupancy decoder; ``sc_vae`` - shape/texture decoders, shape encoder.
* ``pipeline`` - 512 / 1024 / 1024_cascade / 1536_cascade with seeds, progress and cancellation.
* ``loading`` - pipeline.json -> checkpoint stems -> strict, checked loading (hub id or folder).
* ``backend`` - the ``trellis2`` generator the CLI and server use; ``tiny`` - random checkpoints
  in the hub layout for tests and benchmarks.
"""
