"""The fault suite (`make faults`): see run.py."""
