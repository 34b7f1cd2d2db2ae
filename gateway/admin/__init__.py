"""The admin listener (bound to 127.0.0.1 by default, apart from the proxy port).

app.py   /healthz (the process is alive) and /readyz (config loaded, workers up)
"""
