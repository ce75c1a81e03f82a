from laborllm.scoring.exact import MODES, CandidateTrie, ExactScorer, naive_constrained, naive_scores

__all__ = ["MODES", "CandidateTrie", "ExactScorer", "naive_constrained", "naive_scores"]
