"""The model, whatever protocol asks: parameters checked at start, payload -> tensors -> runtime -> outputs ->
post-processing. Knows no protocol and no transport."""
