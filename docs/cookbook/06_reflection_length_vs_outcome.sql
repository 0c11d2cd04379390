-- Q: Are reflections that lead to a success longer or shorter than those that do not?
SELECT model_version, coalesce(next_success, false) AS next_success, count(*) AS n_reflections,
       round(avg(length_chars), 1) AS avg_chars, round(avg(rating), 3) AS avg_rating
FROM lake.reflection_quality
GROUP BY ALL
ORDER BY model_version, next_success;
