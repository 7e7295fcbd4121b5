"""`vamp loadtest`: drive traffic through a canary split and report what each version received.

plan (what to do) → traffic (who sends what) → generator (connections, per process) → recorder (what was
measured) → runner (processes, merge, result) → verdict (did the split hold) → report / plot (for people).
"""
