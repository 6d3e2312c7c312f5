"""The XDR specifications of the protocols (``*.x``) and the generator of their codecs."""
