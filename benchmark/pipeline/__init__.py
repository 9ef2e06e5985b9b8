"""Pipeline glue (owned by the pipeline helper): run matrix, evaluation of run folders,
two-stage combination of score files, the tiny reference run of ``sewerbench check``."""
