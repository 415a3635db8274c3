"""Video data, one module per concern (imported by their own names, so each pulls in only what it needs):

- `sources`: folders, globs, JSONL lists and tar shards of videos; `samples`: the real sample clips;
- `video`: PyAV probing, decoding and encoding, for training and serving alike;
- `dataset`: random clips of T frames at a target fps; `corpus`: the splits a run trains on;
- `photos`: the real photographs and textures scikit-image ships (the generator's and the envs');
- `generator`: the procedural "in-the-wild" clips with their true motion.
"""
