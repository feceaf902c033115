"""Infrastructure below the method: the checkpoint file format (:mod:`.checkpoint`), ``torchrun`` helpers
(:mod:`.distributed`) and the one-run-per-folder lock (:mod:`.run_lock`). Nothing here reads a config."""
