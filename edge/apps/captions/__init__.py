"""`edge-asr captions`: a live caption page for room screens and kiosks, fed by the daemon's socket.

`feed` subscribes to the daemon; `server` serves `page.html` and its event stream to browsers.
"""
