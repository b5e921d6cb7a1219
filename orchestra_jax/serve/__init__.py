"""`orchestra serve`: an OpenAI-compatible chat-completions server for any loadable checkpoint."""
