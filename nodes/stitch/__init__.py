"""Long-video stage: how clips join (Champ's aggregation or first-frame chaining), seams, colour."""
