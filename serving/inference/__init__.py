"""Predictions without Flask: resolve a selector to a version (resolver), check rows against its
compiled feature schema (inputs), call the version's runner (runtime)."""
