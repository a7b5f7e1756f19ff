"""A malformed-input corpus, built by the tests themselves.

Each module builds one kind of bad input from a good one (GGUF files as in
llama.cpp's test-gguf.cpp, safetensors checkpoints as in the safetensors
library's own checks, chat-template bombs, bad command-line values), so the
cases run through every command that accepts that input.
"""
