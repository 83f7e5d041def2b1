"""The edge data loop: images fetched by reference from object storage, uncertain images sent home."""
