"""Model runners: every uploaded model is loaded, inspected and asked to predict only inside a
confined process of its own, forked from a pre-imported zygote; the web worker exchanges data-only
messages with it (protocol.py) and kills and replaces it when it misbehaves (pool.py).

Nothing here imports Flask, the registry, or anything that holds a secret.
"""
