"""See what a token-reduced model keeps: per image, the patches still looked at after each reduction
location (from the classifying forward pass), merge groups, and the CLA head's per-depth evidence."""
