/*
 * SparkPi for imgbuild's end-to-end tests: a Java port of Spark's own
 * examples/src/main/scala/org/apache/spark/examples/SparkPi.scala (same class
 * name, same argument, same output line "Pi is roughly ..."). The pyspark sdist
 * that our test Spark is repacked from carries no examples jar, so scripts/mirror
 * compiles this file against the Spark jars into $CACHE/sparkpi/sparkpi.jar and
 * also ships it as examples/jars/spark-examples_2.12-<version>.jar in the tgz.
 *
 * Usage: spark-submit --class org.apache.spark.examples.SparkPi sparkpi.jar [slices]
 */
package org.apache.spark.examples;

import java.util.ArrayList;
import java.util.List;

import org.apache.spark.SparkConf;
import org.apache.spark.api.java.JavaRDD;
import org.apache.spark.api.java.JavaSparkContext;

public final class SparkPi {
    private SparkPi() {}

    public static void main(String[] args) throws Exception {
        SparkConf conf = new SparkConf().setAppName("Spark Pi");
        JavaSparkContext jsc = new JavaSparkContext(conf);
        try {
            int slices = args.length > 0 ? Integer.parseInt(args[0]) : 2;
            int n = (int) Math.min(100000L * slices, Integer.MAX_VALUE);
            List<Integer> l = new ArrayList<>(n);
            for (int i = 1; i < n; i++) {
                l.add(i);
            }
            JavaRDD<Integer> dataSet = jsc.parallelize(l, slices);
            int count = dataSet.map(i -> {
                double x = Math.random() * 2 - 1;
                double y = Math.random() * 2 - 1;
                return (x * x + y * y <= 1) ? 1 : 0;
            }).reduce(Integer::sum);
            System.out.println("Pi is roughly " + 4.0 * count / (n - 1));
        } finally {
            jsc.stop();
        }
    }
}
