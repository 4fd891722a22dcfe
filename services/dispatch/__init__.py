"""Dispatch: engineers, duty rotas and spare units, assigned automatically."""
