from laborllm.scoring.exact import CandidateTrie, ExactScorer, naive_scores

__all__ = ["CandidateTrie", "ExactScorer", "naive_scores"]
