"""Suite-wide set-up: keep tiktoken and litellm offline before anything imports them."""
from policies.offline import configure_offline_env

configure_offline_env()
