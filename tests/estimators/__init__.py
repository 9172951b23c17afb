"""Classes that test pickles refer to by module path (trusted on purpose where a test says so),
and the corpus of hostile artifacts. Kept apart from tests/support: a runner imports these."""
