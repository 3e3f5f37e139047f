"""LoRA fine-tuning with PEFT."""
