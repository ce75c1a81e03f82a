from laborllm.text.templates import ResumeTemplate, SegmentEncoder

__all__ = ["ResumeTemplate", "SegmentEncoder"]
