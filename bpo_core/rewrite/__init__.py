"""The rewrite path, one stage a module: ``segment`` -> generate -> ``clean`` -> ``faithfulness`` -> ``assemble``.

``round.run_round`` runs the stages over a batch; :class:`~bpo_core.BPOOptimizer` schedules the
rounds (cache, micro-batching, time-outs) around it.
"""
