"""One module per GLM family; each registers its Hugging Face architecture names."""
