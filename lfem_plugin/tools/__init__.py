"""What the command line runs: the train/test pipeline (:mod:`.train`), its checks before a run (:mod:`.preflight`),
:mod:`.doctor`, :mod:`.compare` and :mod:`.report`, and the tools around a trained checkpoint (:mod:`.inference`,
:mod:`.export`, :mod:`.search`, :mod:`.visualize`, :mod:`.gate_analysis`). These, ``commands/`` and ``cli.py`` are
the only modules that read a config."""
