#include "service/stop_matcher.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace qwen::service {
namespace {

// Feeds `pieces` and returns everything released plus whether and what matched.
struct Outcome {
  std::string text;
  bool stopped = false;
  std::string matched;
};

Outcome Feed(std::vector<std::string> stops, const std::vector<std::string>& pieces) {
  StopMatcher m(std::move(stops));
  Outcome o;
  for (const std::string& p : pieces) {
    StopMatcher::Result r = m.Add(p);
    o.text += r.text;
    if (r.stopped) {
      o.stopped = true;
      o.matched = r.matched;
    }
  }
  if (!o.stopped) o.text += m.Flush();
  return o;
}

TEST(StopMatcherTest, NoStopsPassesEverythingThroughAtOnce) {
  StopMatcher m({});
  EXPECT_EQ(m.Add("Hello").text, "Hello");
  EXPECT_EQ(m.held_bytes(), 0u);
}

TEST(StopMatcherTest, MatchInsideOnePiece) {
  Outcome o = Feed({"END"}, {"abcENDdef"});
  EXPECT_TRUE(o.stopped);
  EXPECT_EQ(o.text, "abc");
  EXPECT_EQ(o.matched, "END");
}

TEST(StopMatcherTest, MatchAcrossPieces) {
  Outcome o = Feed({"stop here"}, {"go on, st", "op", " he", "re and more"});
  EXPECT_TRUE(o.stopped);
  EXPECT_EQ(o.text, "go on, ");
}

TEST(StopMatcherTest, HoldsBackOnlyAPossibleStart) {
  StopMatcher m({"</end>"});
  StopMatcher::Result r = m.Add("text </e");
  EXPECT_EQ(r.text, "text ");
  EXPECT_EQ(m.held_bytes(), 3u);
  r = m.Add("x");  // "</ex" can no longer start "</end>"
  EXPECT_EQ(r.text, "</ex");
  EXPECT_FALSE(r.stopped);
}

TEST(StopMatcherTest, FalseStartThenRealMatch) {
  Outcome o = Feed({"abc"}, {"a", "b", "a", "b", "c", "d"});
  EXPECT_TRUE(o.stopped);
  EXPECT_EQ(o.text, "ab");
}

TEST(StopMatcherTest, EarliestMatchWinsAmongSeveralStops) {
  Outcome o = Feed({"world", "lo w"}, {"hello world"});
  EXPECT_EQ(o.text, "hel");
  EXPECT_EQ(o.matched, "lo w");
}

TEST(StopMatcherTest, FlushReleasesTheHeldTailWhenNothingMatched) {
  Outcome o = Feed({"STOP"}, {"the end ST"});
  EXPECT_FALSE(o.stopped);
  EXPECT_EQ(o.text, "the end ST");
}

TEST(StopMatcherTest, NothingAfterAMatch) {
  StopMatcher m({"x"});
  EXPECT_TRUE(m.Add("ax").stopped);
  EXPECT_EQ(m.Add("more").text, "");
  EXPECT_EQ(m.Flush(), "");
}

TEST(StopMatcherTest, MultibyteStopsAndText) {
  Outcome o = Feed({"é!"}, {"caf", "é", "!", " ok"});
  EXPECT_TRUE(o.stopped);
  EXPECT_EQ(o.text, "caf");
}

TEST(StopMatcherTest, EveryChunkingOfTheSameTextGivesTheSameResult) {
  const std::string text = "one two three four five";
  for (size_t a = 1; a < text.size(); ++a) {
    for (size_t b = a + 1; b < text.size(); ++b) {
      Outcome o =
          Feed({"three f", "xyz"}, {text.substr(0, a), text.substr(a, b - a), text.substr(b)});
      EXPECT_TRUE(o.stopped) << a << "," << b;
      EXPECT_EQ(o.text, "one two ") << a << "," << b;
    }
  }
}

TEST(StopMatcherTest, EmptyStopStringsAreIgnored) {
  Outcome o = Feed({""}, {"abc"});
  EXPECT_FALSE(o.stopped);
  EXPECT_EQ(o.text, "abc");
}

}  // namespace
}  // namespace qwen::service
