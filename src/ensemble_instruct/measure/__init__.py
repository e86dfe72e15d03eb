"""Measuring a data set's quality the paper's way: fine-tune a small base model on it (train), score its answers
to held-out tasks (evaluation, through llama.cpp or transformers), and compare data sets made by different
recipes (compare)."""
