"""Operations: health endpoints, request ids, logging."""
