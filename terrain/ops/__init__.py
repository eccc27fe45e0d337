"""Operations: the start-up jobs (migrate, topics) and the generated deployment files."""
