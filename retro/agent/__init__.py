"""The agent: ReAct actor, retrospection, memory, the batched multi-trial runner, and rating."""
