"""Data: sources read into raw rows (files, folders, Hub, builtin), turned into the task's examples, split, and tokenized for models."""
