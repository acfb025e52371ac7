"""The batch's domain: its ledger, its journal between waves, its manifest across runs, its recovery.

``operators/batch.py`` (``SegmindBatchOperator``) decides and ``triggers/batch.py`` waits; what a
batch knows and where each piece of it survives lives here:

- ``ledger``: one record per item (``Item``) and the batch's own facts (``Ledger``);
- ``journal``: the ledger between the waves of one try, written as what changed (linear in N);
- ``manifest``: ``{output_dir}/manifest.json`` across runs, appended to per wave, compacted at the end;
- ``submits``: what each round of submits paid for, in ``task_state_store`` groups (for a retry);
- ``items``: the per-item steps (check, reuse, submit, record a wave, collect, report);
- ``recovery``: what earlier tries or runs paid for, reused or re-attached, never paid again.
"""
