"""The search core: retrieve -> rerank the head -> fuse -> order, for /v1/search and `reprank eval` alike."""
