"""Following one person: choice by size / centrality, tracking through a crossing person, gap
filling, and the no-person cases."""
import numpy as np
import pytest

from marionette.nodes.pose import tracking

W, H = 640, 360


def person(cx, cy, height, arms_up=False, score=0.9):
    """A synthetic DWPose-134 person ``[134, 3]`` and its box ``[4]``: the 18 body points and 6
    feet points of a standing figure ``height`` pixels tall centred on (cx, cy); the rest unseen."""
    s = height / 10.0
    body = {0: (0, -4.5), 1: (0, -3.5), 2: (-1, -3.5), 5: (1, -3.5), 8: (-0.6, 0), 11: (0.6, 0),
            9: (-0.6, 2.5), 12: (0.6, 2.5), 10: (-0.6, 4.8), 13: (0.6, 4.8), 14: (-0.3, -4.7), 15: (0.3, -4.7),
            16: (-0.5, -4.5), 17: (0.5, -4.5)}
    arms = {3: (-1.6, -5.5), 4: (-1.8, -7), 6: (1.6, -5.5), 7: (1.8, -7)} if arms_up else \
        {3: (-1.3, -1.8), 4: (-1.4, -0.3), 6: (1.3, -1.8), 7: (1.4, -0.3)}
    body.update(arms)
    for i, dx in zip(range(18, 24), (0.7, 0.8, 0.5, -0.7, -0.8, -0.5)):
        body[i] = (dx, 5)
    kp = np.zeros((134, 3), np.float32)
    for i, (dx, dy) in body.items():
        kp[i] = (cx + dx * s, cy + dy * s, score)
    xy = kp[:24, :2]
    box = np.array([*xy.min(0), *xy.max(0)], np.float32)
    return kp, box


def frames_of(*people_per_frame):
    boxes = [np.array([p[1] for p in ps], np.float32).reshape(-1, 4) for ps in people_per_frame]
    kps = [np.array([p[0] for p in ps], np.float32).reshape(-1, 134, 3) for ps in people_per_frame]
    return boxes, kps


def test_choose_largest_or_most_central():
    big_side, small_centre = person(100, 180, 300), person(320, 180, 150)
    boxes, kps = frames_of(*[[big_side, small_centre]] * 4)
    largest = tracking.follow_person(boxes, kps, W, H, tracking.TrackConfig(follow="largest"))
    centre = tracking.follow_person(boxes, kps, W, H, tracking.TrackConfig(follow="center"))
    assert largest.index.tolist() == [0, 0, 0, 0]
    assert centre.index.tolist() == [1, 1, 1, 1]
    np.testing.assert_array_equal(centre.keypoints[2], small_centre[0])


def test_selection_scores():
    boxes = np.array([[0, 0, 100, 100], [270, 130, 370, 230], [0, 0, 200, 200]])
    assert np.argmax(tracking.selection_scores(boxes, W, H, "largest")) == 2
    assert np.argmax(tracking.selection_scores(boxes, W, H, "centre")) == 1


def test_unknown_follow_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="largest"):
        tracking.TrackConfig(follow="tallest")
    with pytest.raises(ValueError, match="max_gap_frames"):
        tracking.TrackConfig(max_gap_frames=-1)


def test_choice_looks_at_the_first_frames_not_only_the_first():
    # frame 0: only a small person (a false start); from frame 1 the large one too
    small, large = person(500, 200, 100), person(200, 180, 300)
    boxes, kps = frames_of([small], [small, large], [large, small], [small, large])
    track = tracking.follow_person(boxes, kps, W, H, tracking.TrackConfig(follow="largest", select_frames=3))
    assert track.index.tolist()[1:] == [1, 0, 1]
    assert not track.found[0]  # the small person in frame 0 is not the followed one


def test_tracks_through_a_crossing_person_in_shuffled_order():
    """A (arms down, walking right) and B (arms up, walking left, nearer so taller) cross in the
    middle; detections come in random order. Following the largest (B) must stay on B."""
    rng = np.random.default_rng(0)
    boxes, kps, names = [], [], []
    for t in range(21):
        people = [("A", person(120 + 20 * t, 190, 240)), ("B", person(520 - 20 * t, 180, 260, arms_up=True))]
        rng.shuffle(people)
        boxes.append(np.array([p[1][1] for p in people]))
        kps.append(np.array([p[1][0] for p in people]))
        names.append([n for n, _ in people])
    track = tracking.follow_person(boxes, kps, W, H, tracking.TrackConfig(follow="largest"))
    assert track.found.all()
    assert [names[t][i] for t, i in enumerate(track.index)] == ["B"] * 21


def test_tracks_through_a_crossing_person_who_hides_the_followed_one():
    T = 21
    boxes, kps = [], []
    for t in range(T):
        a = person(120 + 20 * t, 190, 360)  # A is the largest
        b = person(520 - 20 * t, 180, 260, arms_up=True)
        order = [a, b] if t % 2 else [b, a]
        if 9 <= t <= 11:
            order = [b]  # A hidden behind B
        boxes.append(np.array([p[1] for p in order]))
        kps.append(np.array([p[0] for p in order]))
    track = tracking.follow_person(boxes, kps, W, H, tracking.TrackConfig(follow="largest", max_gap_frames=4))
    for t in range(T):
        x_nose = track.keypoints[t, 0, 0]
        assert x_nose == pytest.approx(120 + 20 * t, abs=1e-3), f"frame {t}"
    assert track.filled[9:12].all() and track.found.sum() == T - 3
    assert track.missing_frames == []


def test_gap_filling_interpolates_points_seen_on_both_sides():
    kp0, box0 = person(100, 180, 200)
    kp7, box7 = person(170, 180, 200)
    kp7[4, 2] = 0.1  # R-wrist not visible after the gap
    people = [[(kp0, box0)]] * 4 + [[]] * 3 + [[(kp7, box7)]] * 3
    boxes, kps = frames_of(*people)
    track = tracking.follow_person(boxes, kps, W, H, tracking.TrackConfig(max_gap_frames=3))
    assert track.filled.tolist() == [False] * 4 + [True] * 3 + [False] * 3
    assert track.found.tolist() == [True] * 4 + [False] * 3 + [True] * 3
    assert track.missing_frames == []
    # frame 5 lies 2/4 of the way from frame 3 to frame 7
    np.testing.assert_allclose(track.keypoints[5, 0], (kp0[0] + kp7[0]) / 2, atol=1e-4)
    np.testing.assert_array_equal(track.keypoints[5, 4], 0)  # seen on one side only
    np.testing.assert_array_equal(track.keypoints[5, 50], 0)  # never seen
    assert (track.index[4:7] == -1).all() and np.isnan(track.boxes[5]).all()


def test_gaps_longer_than_max_and_ends_stay_empty():
    p = person(100, 180, 200)
    people = [[]] * 2 + [[p]] * 3 + [[]] * 4 + [[p]] * 2 + [[]]
    boxes, kps = frames_of(*people)
    track = tracking.follow_person(boxes, kps, W, H, tracking.TrackConfig(max_gap_frames=3))
    assert not track.filled.any()
    assert track.missing_frames == [0, 1, 5, 6, 7, 8, 11]
    assert (track.keypoints[track.missing_frames] == 0).all()
    track = tracking.follow_person(boxes, kps, W, H, tracking.TrackConfig(max_gap_frames=4))
    assert track.missing_frames == [0, 1, 11]


def test_fill_gaps_with_zero_max_fills_nothing():
    kps = np.ones((5, 134, 3), np.float32)
    found = np.array([True, False, False, True, True])
    out, filled = tracking.fill_gaps(kps, found, 0)
    assert not filled.any()
    out, filled = tracking.fill_gaps(kps, found, 2)
    assert filled.tolist() == [False, True, True, False, False]


def test_no_people_gives_an_empty_track():
    track = tracking.follow_person([np.zeros((0, 4))] * 3, [np.zeros((0, 134, 3))] * 3, W, H)
    assert not track.found.any() and track.missing_frames == [0, 1, 2]
    assert track.keypoints.shape == (3, 134, 3) and (track.keypoints == 0).all()


def test_a_stranger_far_away_is_not_taken_after_the_person_leaves():
    p = person(100, 180, 200)
    stranger = person(560, 180, 150, arms_up=True)
    boxes, kps = frames_of([p], [p], [p], [stranger], [stranger])
    track = tracking.follow_person(boxes, kps, W, H)
    assert track.found.tolist() == [True, True, True, False, False]


def test_box_iou():
    iou = tracking.box_iou(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]]))
    np.testing.assert_allclose(iou, [[1.0, 50 / 150, 0.0]])
