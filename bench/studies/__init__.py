"""One-off decision studies: each answered a design question once; its conclusion lives in the docs section its
docstring names, and it stays here to be rerun when that question comes back."""
