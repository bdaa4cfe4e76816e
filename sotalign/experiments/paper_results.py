"""The paper's own numbers (docs/notes/paper.md section 6, arXiv v1), for side-by-side reports.

All: DINOv3 ViT-L + NV-Embed-v2, 10k CC3M pairs + 1M unpaired CC3M images and texts, COCO
retrieval (R@1/R@5 in %), ImageNet zero-shot top-1. Method names are ``sotalign.methods``'.
"""

# Table 1: COCO mean R@1 by divergence (rows; "none" = the teacher alone) and linear teacher (columns)
TABLE1 = {
    "none": {"procrustes": 21.1, "cca": 21.5, "contrastive": 24.2},
    "cka": {"procrustes": 23.5, "cca": 23.5, "contrastive": 24.2},
    "ginfonce": {"procrustes": 23.9, "cca": 24.1, "contrastive": 26.5},
    "klot": {"procrustes": 30.0, "cca": 30.3, "contrastive": 28.5},
}

# Tables 4/9 and 5: COCO T2I R@1, T2I R@5, I2T R@1, I2T R@5, ImageNet top-1
TABLE4 = {
    "sail": (21.0, 44.3, 27.4, 51.7, 35.6),
    "structure": (21.0, 43.7, 28.7, 52.7, 38.2),
    "semi_sail": (20.7, 43.6, 26.5, 51.7, 35.6),
    "semi_structure": (20.9, 43.5, 28.0, 52.2, 36.8),
    "nnclr": (21.3, 44.4, 27.9, 52.2, 37.4),
    "sclip": (20.4, 42.6, 27.8, 50.5, 36.4),
    "sotalign": (26.5, 49.8, 34.1, 59.4, 46.1),
}
