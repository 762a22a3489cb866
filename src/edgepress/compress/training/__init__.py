"""Training-time compression: fine-tuning the teacher, distilling the student, and their shared Trainer, loss and teacher-cache code."""
