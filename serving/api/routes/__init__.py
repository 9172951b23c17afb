"""One blueprint per part of the contract: predict, models (reads), admin, health."""
