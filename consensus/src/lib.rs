//! Sans-IO Tendermint BFT consensus for fedpeg (the engine lands in the next commit).
