"""LoRA fine-tuning for tiqu: data sets, training, evaluation."""
