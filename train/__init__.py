"""Offline side of the AR-IIGCN emotion recognizer: data, features, model, training, evaluation.

The bottom floor: ``export`` builds on this package and ``runtime`` on both; this package
imports neither (``tests/test_layering.py`` checks it). Importing it must stay cheap and
torch-free: the live runtime imports the torch-free parts (corpus, configs, feature extractors,
the graph) without pulling in torch.

Commands (``python -m <name>``). A command module holds only argument parsing, logging set-up
and printing; the work it runs lives in the library modules below, named for what they hold.

* ``train``          -- train a model directory from a config (:func:`train.trainer.run_training`);
* ``train.evaluate`` -- score a model on one split (torch backend; ``export.evaluate`` adds the
  exported backends);
* ``train.ablate``   -- the ablation table;
* ``train.bench``    -- training cost on this machine (:mod:`train.training_cost`);
* ``train.finetune`` -- fine-tune the context-aware text encoder;
* ``train.extract``  -- feature files for a corpus (:mod:`train.extract`);
* ``train.data``     -- summary of a corpus file (:mod:`train.data`).

Library modules:

* :mod:`train.common`     -- what every floor shares: ``InputError`` and the CLI wrapper, atomic
  writes, the file hash, onnxruntime sessions;
* :mod:`train.config`     -- typed YAML configs and ``--set`` overrides;
* :mod:`train.data`       -- corpus loaders, the restricted unpickler, checks;
* :mod:`train.features`   -- one extractor per modality (shared with the runtime), their
  registry and feature cache; :mod:`train.extract` runs them over a corpus;
* :mod:`train.graph`      -- the conversation graph and the window of newest utterances (numpy);
* :mod:`train.batch`      -- dialogues -> one graph batch (torch);
* :mod:`train.model`      -- the model, one part a file; :mod:`train.objective` its training step;
* :mod:`train.trainer`    -- seeds, epochs, early stopping, model selection on validation;
* :mod:`train.model_dir`  -- model directories and the model search path (names -> directories);
* :mod:`train.backends`   -- the inference-backend interface and the torch backend;
* :mod:`train.metrics`, :mod:`train.plots` -- figures and PNGs;
* :mod:`train.training_cost` -- the training-cost measurement behind ``train.bench``.
"""
