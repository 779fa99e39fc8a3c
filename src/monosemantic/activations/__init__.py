"""Stage 3: harvest a model's activations at one hook into shuffled shards, and read them back.

capture.py   capture(model, tokens, module): run the forward only as far as one module
harvest.py   HarvestConfig, harvest(...), harvest_sharded(...), run(layout, ...): write the activation store
parallel.py  rank_folder, merge: the ranks' folders of a torchrun harvest and rank 0's merge of them
store.py     ActivationStore(folder), open_activations(path): `.batches(n)` -> Iterator[Tensor]
prefetch.py  prefetch(batches): the same iterator, read ahead by a background thread
"""
