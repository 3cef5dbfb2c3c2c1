"""The digits recipe: synthesise spoken digit strings, train an espnet2 ASR model, pack it."""
