print("rpcgate")
